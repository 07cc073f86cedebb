//! Image builds from a Dockerfile and a context, in the engine (the
//! supervisor never sees a Dockerfile).
//!
//! - [`copy`]: COPY, ADD and WORKDIR written into a mounted snapshot
//!   ([`mount`]).
//! - [`dockerfile`]: the Dockerfile language: parse, typed instructions,
//!   variable substitution, stages and the ones a target needs.
//! - [`args`]: build arguments, scoped per stage as Docker scopes them.
//! - [`cache`]: the build cache, in the engine's database.
//! - [`cachefrom`]: steps taken from the history of `--cache-from` images.
//! - [`commit`]: `POST /commit`, a container's changes as an image.
//! - [`container`]: a RUN step's container, with the build's network
//!   mode and resources, made as the engine makes a run container.
//! - [`context`]: the context a client sends, unpacked safely into a
//!   directory that lives as long as the build.
//! - [`dockerignore`]: which files of a context `.dockerignore` leaves out.
//! - [`image`]: what each instruction does to the image config and its
//!   history, as Docker records it, and the cache key of a step.
//! - [`pipeline`]: one build, from the context to the named image, with
//!   Docker's output.
//! - [`run`]: RUN as a container on a snapshot, its diff a layer.
//! - [`stage`]: the stages of a build, independent ones at the same time.
//! - [`sources`]: COPY and ADD sources found in the context, and their hash.
//! - [`staged`]: COPY and ADD sources that are heredocs or URLs, written
//!   into a directory of the step's own.

pub mod args;
pub mod cache;
pub mod cachefrom;
pub mod commit;
pub mod container;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod dockerignore;
pub mod image;
pub mod mount;
pub mod pipeline;
pub mod run;
pub mod sources;
pub mod stage;
pub mod staged;
