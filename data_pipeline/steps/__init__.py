"""Curation steps, one module per family; `base` holds the Step/Filter/CorpusStage classes and the registry."""
