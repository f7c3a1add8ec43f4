//! The access log: one JSON line per request on stdout, written by a background task through a
//! buffer, so the request path only formats a line and hands it over.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Lines waiting to be written; beyond this, lines are dropped (and counted) rather than
/// slowing requests down.
const QUEUE: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    dropped: prometheus::IntCounter,
}

impl AccessLog {
    /// Starts the writer task for stdout.
    pub fn stdout(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let dropped = prometheus::IntCounter::new(
            "weir_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
            while let Some(line) = rx.recv().await {
                let mut ok = out.write_all(line.as_bytes()).await.is_ok();
                while let Ok(line) = rx.try_recv() {
                    ok &= out.write_all(line.as_bytes()).await.is_ok();
                }
                ok &= out.flush().await.is_ok();
                if !ok {
                    return;
                }
            }
        });
        Ok(Self { tx, dropped })
    }

    pub(crate) fn write(&self, mut line: String) {
        line.push('\n');
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_577_160_420);
        assert_eq!(rfc3339(t), "2026-11-25T03:26:00.420Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
