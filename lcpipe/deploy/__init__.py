"""What ships: the deploy bundle (IRs, labels, preprocessing, serving snippet) and deployable IR variants."""
