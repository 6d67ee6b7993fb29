//! Tracing set-up shared by the binaries.

use tracing_subscriber::EnvFilter;

/// Initialises logging once: filter from `RUST_LOG` (default `info`), JSON lines when
/// `LOG_FORMAT=json`, plain text otherwise; logs go to stderr.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests, embedded use) is not an error worth failing for.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
