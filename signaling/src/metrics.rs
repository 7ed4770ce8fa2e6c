//! The control plane's Prometheus metrics, served with the SFU's at `GET /metrics`.
//!
//! One registry holds both planes' metrics so that one scrape sees a consistent picture. The
//! room gauges are read from the registry at scrape time rather than kept in step on every
//! join and leave, so they can never drift from the truth.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub(crate) struct SignalingMetrics {
    pub rooms: IntGauge,
    pub participants: IntGauge,
    /// Client messages handled, by `type`.
    pub messages: IntCounterVec,
    /// Error replies sent, by `code`: a rise in `unauthorized` or `bad_sdp` points at a
    /// misconfigured backend or a broken client release.
    pub errors: IntCounterVec,
    /// WebSocket connections open now, joined or not.
    pub websockets: IntGauge,
    /// HTTP connections open now, upgraded to WebSocket or not.
    pub http_connections: IntGauge,
    /// Connections and WebSockets refused by a cap, by the config option that refused them.
    pub connections_refused: IntCounterVec,
    /// Connections closed because no complete request header came in time.
    pub header_timeouts: IntCounter,
    /// Support: how long learners waited for an agent.
    pub support_wait: Histogram,
    /// Support: how long sessions lasted (also feeds the wait estimate).
    pub support_session: Histogram,
    /// Support: learners' ratings of ended sessions, by `rating` (`good` or `bad`).
    pub support_ratings: IntCounterVec,
    /// Rooms being recorded now.
    pub recordings_active: IntGauge,
    /// Records written to capture logs, counted when each recording stops.
    pub recording_records: IntCounter,
    /// Records dropped because the disk did not keep up (see `aula_sfu::record::writer`).
    pub recording_dropped: IntCounter,
    /// Recordings that could not start, and track logs that failed (disk full, ...).
    pub recording_failures: IntCounter,
    /// How long exports took, failed ones included.
    pub recording_export_seconds: Histogram,
    pub recording_export_failures: IntCounter,
    /// Bytes under `[recording] dir`, after each export, deletion and retention sweep.
    pub recording_disk_bytes: IntGauge,
    pub recording_uploads: IntCounter,
    pub recording_upload_failures: IntCounter,
    /// Recordings deleted, by who deleted them (`api` or `retention`).
    pub recording_deletions: IntCounterVec,
}

/// Counts one open WebSocket for as long as it lives, however its session ends.
pub(crate) struct OpenWebSocket(IntGauge);

impl OpenWebSocket {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl SignalingMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let rooms = IntGauge::new("aula_rooms", "Rooms currently open")?;
        let participants = IntGauge::new("aula_participants", "Participants currently joined")?;
        let messages = IntCounterVec::new(
            Opts::new(
                "aula_signaling_messages_total",
                "Client signaling messages handled, by type",
            ),
            &["type"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "aula_signaling_errors_total",
                "Error replies sent to clients, by code",
            ),
            &["code"],
        )?;
        // Waits from seconds to an hour; sessions from a minute to two hours.
        let support_wait = Histogram::with_opts(
            HistogramOpts::new(
                "aula_support_queue_wait_seconds",
                "Time a learner waited for an agent",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
        )?;
        let support_session = Histogram::with_opts(
            HistogramOpts::new(
                "aula_support_session_duration_seconds",
                "Duration of support sessions",
            )
            .buckets(vec![
                60.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
            ]),
        )?;
        let support_ratings = IntCounterVec::new(
            Opts::new(
                "aula_support_ratings_total",
                "Learners' ratings of ended support sessions, by rating (good or bad)",
            ),
            &["rating"],
        )?;
        // Both series from the start, so a dashboard sees 0 rather than no data.
        for rating in ["good", "bad"] {
            support_ratings.with_label_values(&[rating]);
        }
        registry.register(Box::new(support_ratings.clone()))?;
        registry.register(Box::new(support_wait.clone()))?;
        registry.register(Box::new(support_session.clone()))?;
        registry.register(Box::new(rooms.clone()))?;
        registry.register(Box::new(participants.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        let websockets = IntGauge::new(
            "aula_websocket_connections",
            "Signaling WebSocket connections open",
        )?;
        registry.register(Box::new(websockets.clone()))?;
        let http_connections = IntGauge::new(
            "aula_http_connections",
            "HTTP connections open, WebSockets included",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "aula_connections_refused_total",
                "Connections and WebSockets refused by a cap, by the option that refused them",
            ),
            &["reason"],
        )?;
        let header_timeouts = IntCounter::new(
            "aula_http_header_timeouts_total",
            "HTTP connections closed for sending no complete request header in time (idle keep-alive ones included)",
        )?;
        registry.register(Box::new(http_connections.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(header_timeouts.clone()))?;
        let recordings_active = IntGauge::new("aula_recordings_active", "Rooms being recorded")?;
        let recording_records = IntCounter::new(
            "aula_recording_records_total",
            "Records written to capture logs (counted when a recording stops)",
        )?;
        let recording_dropped = IntCounter::new(
            "aula_recording_records_dropped_total",
            "Capture log records dropped because the disk did not keep up",
        )?;
        let recording_failures = IntCounter::new(
            "aula_recording_failures_total",
            "Recordings that could not start and track logs that failed",
        )?;
        registry.register(Box::new(recordings_active.clone()))?;
        registry.register(Box::new(recording_records.clone()))?;
        registry.register(Box::new(recording_dropped.clone()))?;
        registry.register(Box::new(recording_failures.clone()))?;
        // Exports take about a file copy's time: well under a second to minutes.
        let recording_export_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "aula_recording_export_seconds",
                "Time taken to export a recording, failed ones included",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
        )?;
        let recording_export_failures = IntCounter::new(
            "aula_recording_export_failures_total",
            "Recording exports that failed",
        )?;
        let recording_disk_bytes = IntGauge::new(
            "aula_recording_disk_bytes",
            "Bytes of recordings on disk (updated after exports, deletions and retention sweeps)",
        )?;
        let recording_uploads = IntCounter::new(
            "aula_recording_uploads_total",
            "Exported recordings uploaded",
        )?;
        let recording_upload_failures = IntCounter::new(
            "aula_recording_upload_failures_total",
            "Exported recordings whose upload failed",
        )?;
        let recording_deletions = IntCounterVec::new(
            Opts::new(
                "aula_recording_deletions_total",
                "Recordings deleted, by who deleted them (api or retention)",
            ),
            &["by"],
        )?;
        registry.register(Box::new(recording_export_seconds.clone()))?;
        registry.register(Box::new(recording_export_failures.clone()))?;
        registry.register(Box::new(recording_disk_bytes.clone()))?;
        registry.register(Box::new(recording_uploads.clone()))?;
        registry.register(Box::new(recording_upload_failures.clone()))?;
        registry.register(Box::new(recording_deletions.clone()))?;
        Ok(Self {
            rooms,
            participants,
            messages,
            errors,
            support_wait,
            support_session,
            support_ratings,
            websockets,
            http_connections,
            connections_refused,
            header_timeouts,
            recordings_active,
            recording_records,
            recording_dropped,
            recording_failures,
            recording_export_seconds,
            recording_export_failures,
            recording_disk_bytes,
            recording_uploads,
            recording_upload_failures,
            recording_deletions,
        })
    }
}
