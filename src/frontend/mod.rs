//! Front ends: each translates the core's types and errors for one host, nothing more.

#[cfg(feature = "component")]
mod component;

#[cfg(feature = "fluentbit")]
mod fluentbit;

#[cfg(feature = "js")]
mod js;
