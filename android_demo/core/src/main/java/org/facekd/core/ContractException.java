package org.facekd.core;

/**
 * A manifest, golden file or model that does not meet the export contract.
 *
 * <p>The message is one line that names the file or key and says what to do.
 */
public class ContractException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public ContractException(String message) {
        super(message);
    }
}
