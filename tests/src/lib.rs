//! licd-tests
