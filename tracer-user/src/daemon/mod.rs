//! The daemon around the stages: its configuration (`config`, one part per stage), the
//! pipeline that runs the stages in order on one task (`pipeline`), the process that wires
//! capture, pipeline and exporters together and shuts them down in order (`app`), and the
//! host check (`check`).

pub mod app;
pub mod check;
pub mod config;
pub mod pipeline;
pub mod workload;
