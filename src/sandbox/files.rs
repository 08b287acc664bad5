//! The file side of the sandbox's Web API: the upload URL that files.getUploadURLExternal hands
//! out, and the page's way to show an uploaded image.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Sandbox;

/// The upload URL from files.getUploadURLExternal: takes the bytes (raw or multipart), answers
/// as Slack does with plain text.
pub(super) async fn upload(
    State(sandbox): State<Sandbox>,
    Path(file): Path<String>,
    body: Bytes,
) -> Response {
    let mut state = sandbox.state();
    let Some(stored) = state.files.get_mut(&file) else {
        return (StatusCode::NOT_FOUND, "file not found").into_response();
    };
    let bytes = multipart_payload(&body).unwrap_or(&body).to_vec();
    let length = bytes.len();
    stored.bytes = Some(bytes);
    stored.length = length;
    (StatusCode::OK, format!("OK - {length}")).into_response()
}

/// The file part of a multipart body, if the body is multipart (Slack accepts either).
fn multipart_payload(body: &[u8]) -> Option<&[u8]> {
    if !body.starts_with(b"--") {
        return None;
    }
    let boundary_end = body.windows(2).position(|w| w == b"\r\n")?;
    let boundary = &body[..boundary_end];
    let headers_end = body.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let rest = &body[headers_end..];
    let end = rest
        .windows(boundary.len() + 2)
        .position(|w| w[..2] == *b"\r\n" && w[2..] == *boundary)?;
    Some(&rest[..end])
}

pub(super) async fn download(State(sandbox): State<Sandbox>, Path(file): Path<String>) -> Response {
    let state = sandbox.state();
    match state
        .files
        .get(&file)
        .and_then(|f| f.bytes.clone().map(|b| (f.name.clone(), b)))
    {
        Some((name, bytes)) => {
            let kind = if name.ends_with(".png") {
                "image/png"
            } else {
                "application/octet-stream"
            };
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                bytes,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
