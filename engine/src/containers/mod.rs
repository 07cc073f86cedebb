//! Containers: Docker's create, start, stop, inspect, list, logs and
//! remove, on the supervisor's containers and tasks.

pub mod spec;
