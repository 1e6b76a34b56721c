package org.facekd.core;

/** The model file's sha256 differs from the one its manifest records. */
public final class ModelIntegrityException extends ContractException {
    private static final long serialVersionUID = 1L;

    public ModelIntegrityException(String message) {
        super(message);
    }
}
