//! Key images (issue 14), the terminal's side of the API:
//!
//! - `PUT /v1/leases/{id}/patient`: the patient the lease's captures belong to, as the HIS
//!   gave it (checked by its DICOM types, kept with the lease, audited);
//! - `POST /v1/leases/{id}/captures`: the desktop's screen, taken by QEMU, parsed strictly,
//!   optionally cropped, re-encoded as a new PNG and kept under the lease with its sha256
//!   (rate-limited per lease, audited, deleted after `export.retention_hours`);
//! - `GET /v1/leases/{id}/captures/{n}`: that PNG;
//! - `POST /v1/leases/{id}/captures/{n}/send`: a DICOM Secondary Capture of it, with the
//!   patient completed from the worklist when one is configured, stored in the PACS by
//!   C-STORE (audited as a DICOM transfer, with its outcome), over DICOM TLS when
//!   configured (`pacs_tls` in the record).
//!
//! Only pixels leave the desktop: the screendump's bytes are never passed on, and the
//! patient's identity comes from the HIS and the worklist, never from the disc.
use crate::anchor::now_ms;
use crate::api::{ApiError, ApiJson, AppState, TerminalAuth};
use crate::config::ExportSettings;
use airlock_capture::{CaptureMeta, CaptureStore, Rect, RgbImage};
use airlock_core::rate::{Keyed, Limit};
use airlock_core::wire::{CaptureInfo, CaptureRequest, ErrorCode, PatientRequest, SendReply};
use airlock_core::LeaseId;
use airlock_dicom::{PatientContext, ScObject};
use airlock_pool::ErrorChain;
use airlock_store::{AuditEntry, LeaseRow};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Mutex;
use std::time::Instant;

/// The most captures tracked for rate limiting (leases beyond share a bucket).
const MAX_RATE_KEYS: usize = 4096;

/// The captures and their settings.
pub struct Exporter {
    settings: ExportSettings,
    store: CaptureStore,
    start: Instant,
    rate: Mutex<Keyed<LeaseId>>,
}

impl Exporter {
    /// The exporter of a broker whose state directory is `state_dir`.
    pub fn new(settings: ExportSettings, state_dir: &std::path::Path) -> anyhow::Result<Exporter> {
        let store = CaptureStore::open(&state_dir.join("captures"))?;
        let per_minute = settings.captures_per_minute;
        let limit = Limit::new(per_minute, per_minute)
            .ok_or_else(|| anyhow::anyhow!("export.captures_per_minute must be at least 1"))?;
        Ok(Exporter {
            settings,
            store,
            start: Instant::now(),
            rate: Mutex::new(Keyed::new(limit, MAX_RATE_KEYS)),
        })
    }

    /// Deletes the captures past their retention time; returns how many.
    pub fn sweep(&self) -> usize {
        let before =
            now_ms() - i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        match self.store.sweep(before) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "cannot delete old captures");
                0
            }
        }
    }

    fn take_rate(&self, lease: &LeaseId) -> Result<(), airlock_core::rate::Limited> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.rate.lock() {
            Ok(mut k) => k.take(lease, now),
            Err(_) => Ok(()),
        }
    }

    fn info(&self, m: &CaptureMeta, patient_id: Option<String>) -> CaptureInfo {
        let keep = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        CaptureInfo {
            capture: m.id,
            sha256: m.sha256.clone(),
            width: m.width,
            height: m.height,
            taken_at: m.taken_at_ms,
            delete_after: m.taken_at_ms.saturating_add(keep),
            pacs: self.settings.pacs.as_ref().map(pacs_name),
            patient_id,
        }
    }
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn parse_lease(s: &str) -> Result<LeaseId, ApiError> {
    LeaseId::parse(s).map_err(|_| ApiError::lease_not_found())
}

fn parse_capture(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=airlock_capture::store::MAX_PER_LEASE).contains(n))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                ErrorCode::CaptureNotFound,
                format!("no capture {s:?}: captures are numbered from 1 within their lease"),
            )
        })
}

/// The lease's patient context from its stored JSON.
fn stored_patient(v: &serde_json::Value) -> Option<PatientContext> {
    let r: PatientRequest = serde_json::from_value(v.clone()).ok()?;
    r.check().ok()
}

/// An audit record about `row`'s lease.
fn entry(action: &str, row: &LeaseRow, details: serde_json::Value) -> AuditEntry {
    AuditEntry::new(action)
        .terminal(&row.terminal)
        .user(&row.user)
        .desktop(&row.desktop)
        .lease(&row.id)
        .details(details)
}

fn audit(st: &AppState, e: AuditEntry) {
    if let Err(err) = st.pool.audit(e) {
        tracing::error!(error = %ErrorChain(&err), "cannot write an export audit record");
    }
}

/// `PUT /v1/leases/{id}/patient`.
pub async fn set_patient(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Path(lease): Path<String>,
    ApiJson(req): ApiJson<PatientRequest>,
) -> Result<StatusCode, ApiError> {
    let lease = parse_lease(&lease)?;
    let p = req
        .check()
        .map_err(|e| ApiError::bad_request(format!("patient: {e}")))?;
    // What is kept: the values as checked (trimmed), in the request's shape.
    let kept = PatientRequest {
        patient_id: p.id.clone(),
        issuer: p.issuer.clone(),
        name: p.name.as_ref().map(|n| n.as_str().to_owned()),
        birth_date: p.birth_date.clone(),
        sex: p.sex.clone(),
        accession: p.accession.clone(),
    };
    let context = serde_json::to_value(&kept).map_err(|_| ApiError::internal())?;
    st.pool.set_lease_patient(
        &lease,
        &terminal,
        &context,
        json!({"patient_id": p.id, "issuer": p.issuer, "accession": p.accession}),
    )?;
    tracing::info!(lease = %lease, terminal = %terminal, "patient context set");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/leases/{id}/captures`: body empty or a [`CaptureRequest`].
pub async fn take_capture(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Path(lease): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let lease = parse_lease(&lease)?;
    let req: CaptureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CaptureRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let crop: Option<Rect> = req
        .crop
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: airlock_capture::ImageError| ApiError::bad_request(e.to_string()))?;
    let ex = &st.export;
    // Only the holder's active lease (a lease that ended is refused here).
    let (row, patient) = st.pool.lease_patient(&lease, &terminal)?;
    let patient_id = patient
        .as_ref()
        .and_then(|v| v.get("patient_id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let refuse = |why: String, outcome: &str| {
        audit(
            &st,
            entry(
                "capture_taken",
                &row,
                json!({"outcome": outcome, "error": why, "patient_id": patient_id}),
            ),
        );
    };
    if let Err(l) = ex.take_rate(&lease) {
        let s = l.retry_after_s();
        refuse(
            format!("rate limited (export.captures_per_minute), retry in {s} s"),
            "refused",
        );
        return Err(ApiError::rate_limited(
            "this lease takes captures too often (export.captures_per_minute)",
            l,
        ));
    }
    let taken_at = now_ms();
    let ppm = match st.pool.lease_screen(&lease, &terminal).await {
        Ok((_, ppm)) => ppm,
        Err(airlock_pool::PoolError::LeaseNotFound) => {
            refuse("the lease ended during the capture".into(), "refused");
            return Err(airlock_pool::PoolError::LeaseNotFound.into());
        }
        Err(e) => {
            let why = ErrorChain(&e).to_string();
            tracing::warn!(lease = %lease, error = %why, "capture failed");
            refuse(why.clone(), "failed");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CaptureFailed,
                format!("the desktop's screen could not be taken: {why}"),
            ));
        }
    };
    // Strict parse, crop, new PNG: off the async threads (a few ms to a few tens).
    // `Err((refused, why))`: `refused` when the crop does not fit the screen (the
    // request's fault), else the screendump could not be used.
    let made =
        tokio::task::spawn_blocking(move || -> Result<(RgbImage, Vec<u8>), (bool, String)> {
            let failed = |e: &dyn std::fmt::Display| (false, e.to_string());
            let img = airlock_capture::ppm::parse(&ppm).map_err(|e| failed(&e))?;
            let img = match crop {
                Some(r) => img.crop(r).map_err(|e| (true, e.to_string()))?,
                None => img,
            };
            let png = img.to_png().map_err(|e| failed(&e))?;
            Ok((img, png))
        })
        .await
        .map_err(|_| ApiError::internal())?;
    let (img, png) = match made {
        Ok(v) => v,
        Err((refused, why)) => {
            refuse(why.clone(), if refused { "refused" } else { "failed" });
            return Err(if refused {
                ApiError::bad_request(why)
            } else {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::CaptureFailed,
                    format!("the desktop's screen could not be used: {why}"),
                )
            });
        }
    };
    let meta = CaptureMeta {
        id: 0,
        lease: lease.to_string(),
        desktop: row.desktop.to_string(),
        sha256: String::new(),
        width: img.width(),
        height: img.height(),
        crop,
        taken_at_ms: taken_at,
    };
    let meta = ex.store.save(&png, meta).map_err(|e| {
        tracing::error!(error = %ErrorChain(&e), "cannot keep a capture");
        refuse(ErrorChain(&e).to_string(), "failed");
        ApiError::internal()
    })?;
    audit(
        &st,
        entry(
            "capture_taken",
            &row,
            json!({
                "outcome": "success",
                "capture": meta.id,
                "sha256": meta.sha256,
                "width": meta.width,
                "height": meta.height,
                "crop": crop.map(|r| r.to_string()),
                "patient_id": patient_id,
            }),
        ),
    );
    tracing::info!(lease = %lease, capture = meta.id, sha256 = %meta.sha256, "capture taken");
    let info = ex.info(&meta, patient_id);
    let mut resp = (StatusCode::CREATED, Json(info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/leases/{lease}/captures/{}", meta.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `GET /v1/leases/{id}/captures/{n}`: the PNG (only while the lease is active).
pub async fn get_capture(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Path((lease, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let lease = parse_lease(&lease)?;
    let n = parse_capture(&n)?;
    st.pool.lease_of(&lease, &terminal)?;
    let (png, meta) = load(&st.export, &lease, n)?;
    let mut resp = (StatusCode::OK, png).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    if let Ok(v) = HeaderValue::from_str(&meta.sha256) {
        h.insert("x-airlock-sha256", v);
    }
    Ok(resp)
}

fn load(ex: &Exporter, lease: &LeaseId, n: u32) -> Result<(Vec<u8>, CaptureMeta), ApiError> {
    ex.store.load(lease.as_str(), n).map_err(|e| match e {
        airlock_capture::StoreError::NotFound { .. }
        | airlock_capture::StoreError::LeaseName(_) => error(
            StatusCode::NOT_FOUND,
            ErrorCode::CaptureNotFound,
            e.to_string(),
        ),
        e => {
            tracing::error!(error = %ErrorChain(&e), "cannot read a capture");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        }
    })
}

/// The PACS's name in records and answers: `CALLED_AE@host:port`.
fn pacs_name(p: &airlock_dicom::net::Peer) -> String {
    format!("{}@{}:{}", p.called_ae, p.host, p.port)
}

/// `POST /v1/leases/{id}/captures/{n}/send`.
pub async fn send_capture(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Path((lease, n)): Path<(String, String)>,
) -> Result<Json<SendReply>, ApiError> {
    let lease = parse_lease(&lease)?;
    let n = parse_capture(&n)?;
    let ex = st.export.clone();
    let (row, stored) = st.pool.lease_patient(&lease, &terminal)?;
    let his = stored.as_ref().and_then(stored_patient);
    let pacs = ex.settings.pacs.clone();
    let patient_id = his.as_ref().map(|p| p.id.clone());
    let fail = |outcome: &str, why: &str, extra: serde_json::Value| {
        let mut d = json!({
            "outcome": outcome, "capture": n, "error": why, "patient_id": patient_id,
            "pacs": pacs.as_ref().map(pacs_name),
            "pacs_tls": pacs.as_ref().map(|p| p.tls.is_some()),
        });
        if let (Some(d), Some(x)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(x.clone());
        }
        audit(&st, entry("capture_sent", &row, d));
    };
    let Some(pacs) = pacs.clone() else {
        let why = "this broker has no PACS configured ([export.pacs])";
        fail("refused", why, json!({}));
        return Err(error(
            StatusCode::CONFLICT,
            ErrorCode::ExportNotConfigured,
            format!("{why}; ask IT to set it up"),
        ));
    };
    let Some(his) = his else {
        let why = "the lease has no patient";
        fail("refused", why, json!({}));
        return Err(error(
            StatusCode::CONFLICT,
            ErrorCode::NoPatient,
            "the lease has no patient: start `airlock open` with --patient-id (from the HIS), then capture again",
        ));
    };
    let (png, meta) = match load(&ex, &lease, n) {
        Ok(v) => v,
        Err(e) => {
            fail("refused", "no such capture", json!({}));
            return Err(e);
        }
    };
    let sha256 = meta.sha256.clone();
    let worklist = ex.settings.worklist.clone();
    let settings = ex.settings.clone();
    let pacs_label = pacs_name(&pacs);
    let pacs_tls = pacs.tls.is_some();
    let his_for_job = his.clone();
    // Worklist, object, C-STORE: blocking network work, off the async threads.
    let job = tokio::task::spawn_blocking(
        move || -> Result<(ScObject, PatientContext, bool, u16), (ErrorCode, String)> {
            let img = RgbImage::from_png(&png).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
            let (w, h) = (
                u16::try_from(img.width())
                    .map_err(|_| (ErrorCode::CaptureFailed, "too wide".to_owned()))?,
                u16::try_from(img.height())
                    .map_err(|_| (ErrorCode::CaptureFailed, "too high".to_owned()))?,
            );
            let rgb = airlock_dicom::Rgb {
                width: w,
                height: h,
                pixels: img.into_pixels(),
            };
            let (patient, from_worklist) = match &worklist {
                Some(wl) => {
                    let found = airlock_dicom::worklist::find_patient(
                        wl,
                        &his_for_job.id,
                        his_for_job.accession.as_deref(),
                    )
                    .map_err(|e| (ErrorCode::WorklistFailed, e.to_string()))?;
                    (found, true)
                }
                None => (his_for_job, false),
            };
            let taken_at = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(meta.taken_at_ms) * 1_000_000,
            )
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
            let sc = airlock_dicom::secondary_capture(&airlock_dicom::Capture {
                patient: &patient,
                image: &rgb,
                taken_at,
                charset: settings.charset,
                root: &settings.uid_root,
                equipment: &settings.equipment,
                series_number: 1,
                instance_number: meta.id,
            })
            .map_err(|e| (ErrorCode::CaptureFailed, e.to_string()))?;
            let stored = airlock_dicom::pacs::c_store(&pacs, &sc)
                .map_err(|e| (ErrorCode::PacsFailed, e.to_string()))?;
            Ok((sc, patient, from_worklist, stored.status))
        },
    )
    .await
    .map_err(|_| ApiError::internal())?;
    match job {
        Ok((sc, patient, from_worklist, status)) => {
            let reply = SendReply {
                capture: n,
                sop_instance_uid: sc.sop_instance_uid.clone(),
                study_instance_uid: sc.study_uid.clone(),
                pacs: pacs_label,
                status,
                patient_id: patient.id.clone(),
                from_worklist,
            };
            audit(
                &st,
                entry(
                    "capture_sent",
                    &row,
                    json!({
                        "outcome": "success",
                        "capture": n,
                        "sha256": sha256,
                        "sop_instance_uid": reply.sop_instance_uid,
                        "study_instance_uid": reply.study_instance_uid,
                        "pacs": reply.pacs,
                        "pacs_tls": pacs_tls,
                        "status": status,
                        "patient_id": patient.id,
                        "accession": patient.accession,
                        "from_worklist": from_worklist,
                    }),
                ),
            );
            tracing::info!(lease = %lease, capture = n, sop_instance_uid = %reply.sop_instance_uid, pacs = %reply.pacs, "capture sent");
            Ok(Json(reply))
        }
        Err((code, why)) => {
            fail("failed", &why, json!({"sha256": sha256}));
            tracing::warn!(lease = %lease, capture = n, error = %why, "sending a capture failed");
            let (status, message) = match code {
                ErrorCode::WorklistFailed => (StatusCode::BAD_GATEWAY, why),
                ErrorCode::PacsFailed => (
                    StatusCode::BAD_GATEWAY,
                    format!("the PACS did not store the capture: {why}"),
                ),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, why),
            };
            Err(error(status, code, message))
        }
    }
}
