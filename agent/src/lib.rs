//! `licd-agent`: the license-enforcement agent.
//!
//! The pure core (trusted time, enforcement, acceptance rules) takes time as an argument and
//! does no I/O; thin shells around it do the files, the MQTT session and the local API.
