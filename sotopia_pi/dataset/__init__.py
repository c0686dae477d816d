"""From played episodes to training data: candidates, filters and selection, manual
annotations, frozen snapshots and the export formats."""
