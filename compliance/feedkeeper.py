"""Feed keeping: fetching feeds safely, recording their versions, updating on schedule."""
