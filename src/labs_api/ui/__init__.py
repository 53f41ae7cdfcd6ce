"""The web playground served at / (sources in ui/ at the repository root, built into static/)."""
