//! The eventops server: configuration, HTTP routes, start-up. The binary is `eventops`.

pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod dialer;
pub mod error;
pub mod fanout;
pub mod limiter;
pub mod metrics;
pub mod openapi;
pub mod relay;
pub mod server;
pub mod testing;

/// The actix system the server runs in, on a multi-thread tokio runtime with a thread per
/// core: the engine (event workers, run actors, the intake writer) is spawned on it, so it uses
/// every core; the HTTP workers keep their own threads.
pub fn system() -> actix_web::rt::SystemRunner {
    actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("eventops-engine")
            .build()
            .unwrap_or_else(|e| {
                eprintln!("eventops: cannot start the runtime: {e}");
                std::process::exit(1)
            })
    })
}
