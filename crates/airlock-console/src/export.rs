//! An audit export as a streamed HTTP body, for the console and the admin API alike: a
//! blocking task writes the records into a bounded channel the body reads from, so
//! memory stays constant however many records match, and the export stops when the
//! client goes away.
use airlock_store::{AuditFilter, ExportFormat, ExportWriter, Reader};
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Bytes per body chunk.
const CHUNK: usize = 64 * 1024;

/// A `Write` that hands its bytes, in chunks, to the HTTP body; fails once the client
/// is gone (so the export stops).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

/// The records `filter` matches, oldest first, as a `format` attachment.
pub fn export_response(reader: Reader, filter: AuditFilter, format: ExportFormat) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let run = || -> Result<u64, airlock_store::ExportError> {
            let mut w = ExportWriter::new(format, out)?;
            let n = reader.for_each_audit(&filter, |v| w.write(&v))?;
            let mut out = w.finish()?;
            std::io::Write::flush(&mut out)?;
            Ok(n)
        };
        match run() {
            Ok(n) => tracing::info!(records = n, "audit export sent"),
            Err(e) => tracing::warn!(error = %e, "audit export stopped"),
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::io::Error>(bytes::Bytes::from(c)), rx))
    });
    let name = format!(
        "attachment; filename=\"airlock-audit.{}\"",
        format.extension()
    );
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
