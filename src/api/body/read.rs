//! Reading a request body within its cap and the listener's byte budget.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;

use crate::api::error::ApiError;
use crate::api::limits::{BodyReservation, Limit, is_body_timeout};

/// Reads a body of at most `limit` bytes. `Content-Length` over the limit is refused before a
/// byte is read; a body without one is counted while streaming and refused as soon as it
/// passes the limit, so memory never exceeds the limit.
///
/// The bytes received count against the listener's global budget of buffered bodies (503 when
/// it is full, never a wait) until the returned buffer and every slice of it are dropped. A body the
/// listener cut off for stalling or trickling is answered 408.
pub async fn read_capped(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit {
            return Err(ApiError::TooLarge(limit));
        }
    }
    // Bytes are reserved as they arrive, not as declared: a client that declares a large body
    // and sends nothing holds no budget.
    let mut reservation = BodyReservation::current();
    let mut buf = match declared.and_then(|len| usize::try_from(len).ok()) {
        Some(len) => BytesMut::with_capacity(len.min(PREALLOCATE)),
        None => BytesMut::new(),
    };
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if is_body_timeout(&e) {
                reservation.hit(Limit::Body);
                return ApiError::BodyTimeout;
            }
            tracing::debug!(error = %e, "Request body could not be read");
            ApiError::BadBody("the body could not be read".into())
        })?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(ApiError::TooLarge(limit));
            }
            reservation.grow_to(buf.len() + data.len())?;
            buf.extend_from_slice(&data);
        }
    }
    Ok(reservation.attach(buf))
}

/// The most a declared `Content-Length` preallocates before its bytes arrive.
const PREALLOCATE: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_declared_and_streamed_bodies() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, "11".parse().unwrap());
        let err = read_capped(&h, Body::from("hello world"), 10)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::TooLarge(10));
        let chunks = futures::stream::iter(
            (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))),
        );
        let err = read_capped(&HeaderMap::new(), Body::from_stream(chunks), 10)
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::TooLarge(10));
        let ok = read_capped(&HeaderMap::new(), Body::from("0123456789"), 10)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"0123456789");
    }
}
