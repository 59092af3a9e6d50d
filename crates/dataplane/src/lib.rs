//! Canopy's sans-IO packet pipelines.
