"""Per-case metrics (Dice, IoU, HD95, NSD), their aggregation over cases and folds, paired statistics and the
Markdown report (docs/architecture.md, docs/evaluation.md)."""
