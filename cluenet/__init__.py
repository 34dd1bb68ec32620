"""ClueNet: clue-aware video question answering (extract clues -> filter -> reason -> answer).

The library behind ClueNet Explorer.  Modules, one concept each:

    schema    typed records: Sample (dataset rows), Trace (one pipeline run)
    grammar   render / parse the <clues>/<chain>/<answer> output text
    video     probe and sample frames with real timestamps, sandboxed decoding
    data      dataset loaders (NExT-QA, STAR, MVBench, ClueWorld) and generator
    eval      accuracy and clue / filter / chain metrics
    backbones registry of supported transformers model families
    model     the ClueNet pipeline (two passes over one cached prefix)
    filter    the adaptive clue filter head and threshold
    analysis  hallucination and faithfulness flags
    plots     plotly figures of traces
"""
__version__ = "0.1.0"
