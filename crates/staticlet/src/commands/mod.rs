//! One module per subcommand, as youki's CLI: its arguments (clap) and what it does. `run`'s
//! flags and config file are in `options.rs`, the runtime it picks in `runtime.rs`.

pub mod completion;
pub mod control;
pub mod describe;
pub mod exec;
pub mod get;
pub mod images;
pub mod logs;
pub mod run;
pub mod validate;
pub mod wait;
