"""What the framework reads of training data: tokenized prefixes (`shards`), the sampler and dataset
builder (`datasets`), tokenizer loading (`tokenizer`) and blend fragments (`mix`).

It sits here, not in `data_pipeline`, because imports flow one way: curation (`data_pipeline`)
writes prefixes and may use the framework; the framework never imports curation code.
"""
