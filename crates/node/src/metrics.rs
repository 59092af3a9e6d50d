//! Prometheus text exposition (`GET /metrics`) for the daemons.
//!
//! The packet loops copy their counters on tick into a `watch` channel; the daemon's
//! render function formats the latest copy when scraped. Nothing here touches the packet
//! path.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use dataplane::DropCounters;

/// Builds the exposition text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A Prometheus text document being written.
#[derive(Default)]
pub struct Text(String);

impl Text {
    /// One metric with its help and type lines and one sample per `(labels, value)`.
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {v}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
            }
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.metric(name, "counter", help, &[("", v)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.metric(name, "gauge", help, &[("", v)]);
    }

    /// Drops by reason, every reason listed (zeros included) so that rates work from the
    /// first scrape.
    pub fn drops(&mut self, name: &str, help: &str, d: &DropCounters) {
        let labels: Vec<(String, u64)> = dataplane::DropReason::ALL
            .iter()
            .map(|&r| (format!("reason=\"{}\"", r.as_str()), d.get(r)))
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        self.metric(name, "counter", help, &samples);
    }

    /// One metric whose samples carry labels with arbitrary values (escaped as the text
    /// format wants: backslash, double quote, newline).
    pub fn labeled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: &[(Vec<(&str, String)>, u64)],
    ) {
        let labels: Vec<(String, u64)> = samples
            .iter()
            .map(|(ls, v)| {
                let l: Vec<String> = ls
                    .iter()
                    .map(|(k, v)| {
                        let v = v
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        format!("{k}=\"{v}\"")
                    })
                    .collect();
                (l.join(","), *v)
            })
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        self.metric(name, kind, help, &samples);
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Counters the daemons keep outside the packet loop (control-plane work).
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub watch_connects: AtomicU64,
    pub watch_disconnects: AtomicU64,
    pub changes_applied: AtomicU64,
    pub resolves_ok: AtomicU64,
    pub resolves_not_found: AtomicU64,
    pub resolve_errors: AtomicU64,
    pub port_block_requests: AtomicU64,
    pub port_block_errors: AtomicU64,
    pub reports_sent: AtomicU64,
    pub report_errors: AtomicU64,
}

impl ControlCounters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, prefix: &str, t: &mut Text) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        t.counter(
            &format!("{prefix}_watch_connects_total"),
            "Watch streams opened to the manager.",
            g(&self.watch_connects),
        );
        t.counter(
            &format!("{prefix}_watch_disconnects_total"),
            "Watch streams that broke or ended (followed by a reconnect).",
            g(&self.watch_disconnects),
        );
        t.counter(
            &format!("{prefix}_config_changes_total"),
            "Configuration changes applied to the pipeline.",
            g(&self.changes_applied),
        );
        t.metric(
            &format!("{prefix}_resolves_total"),
            "counter",
            "Resolve requests to the manager by result.",
            &[
                ("result=\"ok\"", g(&self.resolves_ok)),
                ("result=\"not_found\"", g(&self.resolves_not_found)),
                ("result=\"error\"", g(&self.resolve_errors)),
            ],
        );
        t.metric(
            &format!("{prefix}_port_block_requests_total"),
            "counter",
            "Port blocks asked of the manager by result.",
            &[
                (
                    "result=\"ok\"",
                    g(&self.port_block_requests).saturating_sub(g(&self.port_block_errors)),
                ),
                ("result=\"error\"", g(&self.port_block_errors)),
            ],
        );
        t.metric(
            &format!("{prefix}_reports_total"),
            "counter",
            "Load reports sent to the manager by result.",
            &[
                (
                    "result=\"ok\"",
                    g(&self.reports_sent).saturating_sub(g(&self.report_errors)),
                ),
                ("result=\"error\"", g(&self.report_errors)),
            ],
        );
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` completes. Binding errors are returned
/// before serving starts.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    render(),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_samples_are_escaped() {
        let mut t = Text::default();
        t.labeled(
            "x_total",
            "counter",
            "Help.",
            &[
                (vec![("pool", "p1".into()), ("edge", "e\"1\\\n".into())], 3),
                (vec![], 4),
            ],
        );
        assert_eq!(
            t.finish(),
            "# HELP x_total Help.\n# TYPE x_total counter\nx_total{pool=\"p1\",edge=\"e\\\"1\\\\\\n\"} 3\nx_total 4\n"
        );
    }
}
