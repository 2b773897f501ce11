"""Measuring generations against real responses: the metrics (two-sample tests, MAUVE, Fréchet,
diversity) and the plots. scikit-learn, scipy and matplotlib are imported here only."""
