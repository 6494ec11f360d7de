//! Real-server test harness.
