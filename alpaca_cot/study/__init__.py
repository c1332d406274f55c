"""The study: the ablation grid and its held-out draws (grid), its cells trained and evaluated (runner), and
the report: numbers (report, significance), prose (prose) and figures (figures)."""
