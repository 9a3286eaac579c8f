//! Spatial tensor ops for 2D and 3D registration, as candle custom ops with forward and
//! backward passes.
