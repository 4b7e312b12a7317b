//! licd-stub
