//! Ansible's binary module protocol, and nothing about PostgreSQL: argument
//! specs, their validation with Ansible's conversions, the result object,
//! secret masking, and a panic hook that keeps every failure in JSON.

pub mod docs;
pub mod module;
pub mod spec;
pub mod validate;

pub use module::{register_secret, run, scrub, Failure, Outcome, Task, MASK, NO_LOG_PLACEHOLDER};
pub use spec::{Kind, OptionSpec, RequiredIf, Spec};
pub use validate::{validate, ArgErrors};
