"""The work itself: plain functions over typed configs and paths."""
