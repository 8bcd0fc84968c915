//! The ZeroMQ request socket.
