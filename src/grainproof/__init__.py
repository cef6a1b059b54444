"""grainproof: provenance and harvest-date verification for grain lots from smartphone photos."""

__version__ = "0.1.0"
