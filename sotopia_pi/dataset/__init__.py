"""From played episodes to training data, in one-way layers (each module imports only those
listed before it; .importlinter's dataset-layers contract checks it):

    errors        CurationError, ExportError, SnapshotError
    frozen        an episode and what surrounds it, fixed in one record
    examples      per-turn SFT examples, token counts, prompt truncation, selection statistics
    annotations   a curator's keep/reject decisions, tags and turn edits
    candidates    each side of each finished episode, with its scores and who played it
    filters       pure functions from candidates to the kept sides, and their grammar
    selection     decisions around the filters; previews and counts
    snapshots     named, immutable selections that training reads
    export        the training and Sotopia file formats written from a snapshot

Their SQL lives in the store (store/curation.py, store/snapshots.py).
"""
