//! licd-agent
