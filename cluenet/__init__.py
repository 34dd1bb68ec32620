"""ClueNet: clue-aware video question answering (extract clues -> filter -> reason -> answer).

The library behind ClueNet Explorer.  Modules, one concept each:

    schema      typed records: Sample (dataset rows), Trace (one pipeline run)
    grammar     render / parse the <clues>/<chain>/<answer> output text
    errors      the ClueNetError family (bad input the user can fix)
    video       probe and sample frames with real timestamps, sandboxed decoding
    data        dataset loaders (project JSONL, NExT-QA, STAR, MVBench) and the ClueWorld generator
    answers     answer extraction from free text
    metrics     clue / filter / chain metrics
    eval        the evaluator CLI (``python -m cluenet.eval``)
    backbones   registry of supported transformers model families
    tokenizer   the small ClueWorld BPE tokenizer
    prompts     the exact token sequences of inference and training
    filter      the adaptive clue filter head and threshold
    cache       the bounded clip / vision-feature / prefix cache
    model       the ClueNet pipeline (two passes over one cached prefix)
    pretrained  the saved model folder (load / save) and the embedded default model
    analysis    hallucination and faithfulness flags
    casestudy   resumable runs over a dataset split; tags, report, imports, dashboard beside it
    runstore    where the analyst's runs live on a server: checked paths, run / load / import
    plots       plotly figures of one trace; frames: the frame strip
    examples    the example clips and traces the app ships
"""
__version__ = "0.1.0"
