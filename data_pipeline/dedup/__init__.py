"""Near-duplicate removal: MinHash signatures (minhash), LSH bands with external sort (lsh), union-find
clusters (clusters), the on-disk index and reduce (index), the standalone command (api), the
`minhash_dedup` pipeline stage (step) and precision/recall against exact Jaccard (evaluate)."""
