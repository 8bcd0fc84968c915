//! Security controls: pure checks over bytes, headers and addresses. No axum types here.
