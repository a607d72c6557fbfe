//! ProbeManager component tests.
