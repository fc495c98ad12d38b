"""aus_lib: emotion recognition from facial Action Unit sequences (OpenFace, RAVDESS)."""
__version__ = "0.1.0"
