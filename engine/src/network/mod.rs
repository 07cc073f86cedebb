//! The engine's networks: bridges, addresses, published ports, the firewall
//! and the embedded DNS server.

pub mod dns;
pub mod firewall;
pub mod ports;
