//! Object management functions and key generation.

use super::convert::{fill_template, mechanism, requested_types, search_template, template};
use super::{array, array_mut, bad, out, output, set_length};
use crate::token;
use cryptoki_sys as ck;

cryptoki_fn! {
    /// Creates an object from a template.
    fn C_CreateObject(
        session: ck::CK_SESSION_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
        object: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes `count` attributes, or NULL.
        let template = unsafe { template(attributes, count) }?;
        // SAFETY: the caller passes a handle to fill.
        let object = unsafe { out(object) }?;
        *object = token.create_object(session, template)?;
        Ok(())
    }

    /// Destroys an object.
    fn C_DestroyObject(session: ck::CK_SESSION_HANDLE, object: ck::CK_OBJECT_HANDLE) {
        token::current()?.destroy_object(session, object)
    }

    /// An object's size: not known (`CK_UNAVAILABLE_INFORMATION`).
    fn C_GetObjectSize(
        session: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        size: *mut ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a CK_ULONG to fill.
        let size = unsafe { out(size) }?;
        *size = token.object_size(session, object)?;
        Ok(())
    }

    /// Reads attribute values, with the spec's partial-fill semantics.
    fn C_GetAttributeValue(
        session: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        if attributes.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `count` attributes.
        let types = unsafe { requested_types(attributes, count) }?;
        let outcomes = token.attribute_values(session, object, &types)?;
        // SAFETY: as above; their non-NULL values have ulValueLen writable bytes.
        unsafe { fill_template(attributes, count, &outcomes) }
    }

    /// Starts a search; the node answers every match at once.
    fn C_FindObjectsInit(
        session: ck::CK_SESSION_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes `count` attributes, or NULL with 0.
        let template = unsafe { search_template(attributes, count) }?;
        token.find_objects_init(session, template)
    }

    /// Hands out the next matches.
    fn C_FindObjects(
        session: ck::CK_SESSION_HANDLE,
        objects: *mut ck::CK_OBJECT_HANDLE,
        max: ck::CK_ULONG,
        found: *mut ck::CK_ULONG,
    ) {
        let token = token::current()?;
        if objects.is_null() || found.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes room for `max` handles.
        let objects = unsafe { array_mut(objects, max) }?;
        let n = token.find_objects(session, objects)?;
        // SAFETY: the caller passes a count to fill (non-NULL, checked above).
        *unsafe { out(found) }? = n as ck::CK_ULONG;
        Ok(())
    }

    /// Ends a search.
    fn C_FindObjectsFinal(session: ck::CK_SESSION_HANDLE) {
        token::current()?.find_objects_final(session)
    }

    /// Generates a secret key (AES).
    fn C_GenerateKey(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
        key: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a mechanism.
        let mechanism = unsafe { mechanism(mech) }?;
        // SAFETY: the caller passes `count` attributes, or NULL.
        let template = unsafe { template(attributes, count) }?;
        // SAFETY: the caller passes a handle to fill.
        let key = unsafe { out(key) }?;
        *key = token.generate_key(session, mechanism, template)?;
        Ok(())
    }

    /// Generates a key pair (EC P-256, RSA).
    fn C_GenerateKeyPair(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        public_attributes: *mut ck::CK_ATTRIBUTE,
        public_count: ck::CK_ULONG,
        private_attributes: *mut ck::CK_ATTRIBUTE,
        private_count: ck::CK_ULONG,
        public_key: *mut ck::CK_OBJECT_HANDLE,
        private_key: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a mechanism.
        let mechanism = unsafe { mechanism(mech) }?;
        // SAFETY: the caller passes `public_count` attributes, or NULL.
        let public_template = unsafe { template(public_attributes, public_count) }?;
        // SAFETY: the caller passes `private_count` attributes, or NULL.
        let private_template = unsafe { template(private_attributes, private_count) }?;
        if public_key.is_null() || private_key.is_null() {
            return Err(bad());
        }
        let (public, private) =
            token.generate_key_pair(session, mechanism, public_template, private_template)?;
        // SAFETY: the caller passes handles to fill (non-NULL, checked above); each
        // reference lives for one store, so the two may even be the same pointer.
        *unsafe { out(public_key) }? = public;
        // SAFETY: as above.
        *unsafe { out(private_key) }? = private;
        Ok(())
    }

    /// Changes attributes of an object.
    fn C_SetAttributeValue(
        session: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        if attributes.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `count` attributes.
        let template = unsafe { template(attributes, count) }?;
        token.set_attribute_value(session, object, template)
    }

    /// Copies an object, with some attributes changed.
    fn C_CopyObject(
        session: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
        new_object: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes `count` attributes, or NULL.
        let template = unsafe { template(attributes, count) }?;
        if new_object.is_null() {
            return Err(bad());
        }
        let handle = token.copy_object(session, object, template)?;
        // SAFETY: the caller passes a handle to fill (non-NULL, checked above).
        *unsafe { out(new_object) }? = handle;
        Ok(())
    }

    /// Wraps a key; a NULL output asks for the length.
    fn C_WrapKey(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        wrapping_key: ck::CK_OBJECT_HANDLE,
        key: ck::CK_OBJECT_HANDLE,
        wrapped: *mut ck::CK_BYTE,
        wrapped_len: *mut ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a mechanism.
        let mechanism = unsafe { mechanism(mech) }?;
        // SAFETY: the caller passes a length to fill.
        let len = unsafe { out(wrapped_len) }?;
        // SAFETY: the caller passes `*len` writable bytes, or NULL.
        let buf = unsafe { output(wrapped, *len) }?;
        let result = token.wrap_key(session, mechanism, wrapping_key, key, buf);
        set_length(len, result)
    }

    /// Unwraps a key into a new object.
    fn C_UnwrapKey(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        unwrapping_key: ck::CK_OBJECT_HANDLE,
        wrapped: *mut ck::CK_BYTE,
        wrapped_len: ck::CK_ULONG,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
        key: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a mechanism.
        let mechanism = unsafe { mechanism(mech) }?;
        if wrapped.is_null() || key.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `wrapped_len` bytes.
        let wrapped = unsafe { array(wrapped, wrapped_len) }?;
        // SAFETY: the caller passes `count` attributes, or NULL.
        let template = unsafe { template(attributes, count) }?;
        let handle = token.unwrap_key(session, mechanism, unwrapping_key, wrapped, template)?;
        // SAFETY: the caller passes a handle to fill (non-NULL, checked above).
        *unsafe { out(key) }? = handle;
        Ok(())
    }

    /// Derives a key into a new object.
    fn C_DeriveKey(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        base_key: ck::CK_OBJECT_HANDLE,
        attributes: *mut ck::CK_ATTRIBUTE,
        count: ck::CK_ULONG,
        key: *mut ck::CK_OBJECT_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a mechanism.
        let mechanism = unsafe { mechanism(mech) }?;
        // SAFETY: the caller passes `count` attributes, or NULL.
        let template = unsafe { template(attributes, count) }?;
        if key.is_null() {
            return Err(bad());
        }
        let handle = token.derive_key(session, mechanism, base_key, template)?;
        // SAFETY: the caller passes a handle to fill (non-NULL, checked above).
        *unsafe { out(key) }? = handle;
        Ok(())
    }
}
