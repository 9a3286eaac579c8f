pub use voxreg_framework as framework;
