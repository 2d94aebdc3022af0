//! The generated protobuf types and gRPC stubs of the Aegis v1 contracts.
//!
//! One module per protobuf package, named as the package is. Only the gRPC boundary of each
//! service uses these types; domain and storage code never see them.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
// The generated docs are the contracts' comments, written for grpcurl users, not for rustdoc.
#![allow(
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]

/// Encoded `FileDescriptorSet` of every contract, with comments, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aegis_descriptor.bin"));

/// `google.api` annotations used by the contracts.
pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// The contracts, one module per package.
pub mod aegis {
    pub mod cases {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/aegis.cases.v1.rs"));
        }
    }
    pub mod exceptions {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/aegis.exceptions.v1.rs"));
        }
    }
    pub mod notifications {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/aegis.notifications.v1.rs"));
        }
    }
    pub mod export {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/aegis.export.v1.rs"));
        }
    }
    pub mod integrations {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/aegis.integrations.v1.rs"));
        }
    }
}
