//! Declaration macros: kernel imports and layout checks.

/// Declares kernel routines once and derives, from the same tokens, the `extern "win64"`
/// block, a `signatures` module with one function-pointer type per routine (so an
/// implementation can be checked against the declaration at compile time) and an `IMPORTS`
/// list.
macro_rules! kernel_imports {
    (
        module = $module:literal;
        $(
            $(#[$attr:meta])*
            pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;
        )*
    ) => {
        unsafe extern "win64" {
            $(
                $(#[$attr])*
                pub fn $name($($arg: $ty),*) $(-> $ret)?;
            )*
        }

        /// Function-pointer types of the routines declared in this module, one per export.
        pub mod signatures {
            #[allow(unused_imports, reason = "not every module uses every type")]
            use super::*;
            $(
                #[doc = concat!("Signature of [`", stringify!($name), "`](super::", stringify!($name), ").")]
                pub type $name = unsafe extern "win64" fn($($ty),*) $(-> $ret)?;
            )*
        }

        /// The kernel routines this module declares.
        pub const IMPORTS: &[$crate::Import] = &[
            $( $crate::Import { module: $module, name: stringify!($name) }, )*
        ];
    };
}

/// Asserts a `#[repr(C)]` type's size, alignment and field offsets at compile time against
/// the reference numbers, and yields a [`crate::layout::TypeLayout`] describing it for the
/// C-header cross-check.
macro_rules! layout {
    (
        $ty:ty, c = $c:expr, size = $size:expr, align = $align:expr, c_size = $csize:expr,
        { $( $($field:ident).+ => $cfield:literal @ $off:expr ),* $(,)? }
    ) => {{
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            assert!(core::mem::align_of::<$ty>() == $align, concat!("alignment of ", stringify!($ty)));
            $(
                assert!(
                    core::mem::offset_of!($ty, $($field).+) == $off,
                    concat!("offset of ", stringify!($ty), ".", stringify!($($field).+))
                );
            )*
        };
        $crate::layout::TypeLayout {
            rust: stringify!($ty),
            c: $c,
            size: core::mem::size_of::<$ty>(),
            align: core::mem::align_of::<$ty>(),
            c_size: $csize,
            fields: &[
                $(
                    $crate::layout::FieldLayout {
                        c: $cfield,
                        offset: core::mem::offset_of!($ty, $($field).+),
                    },
                )*
            ],
        }
    }};
}
