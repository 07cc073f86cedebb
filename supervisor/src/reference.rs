//! Image references: `[registry/]repository[:tag][@digest]`.
