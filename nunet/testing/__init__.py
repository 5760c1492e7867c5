"""Test tools shipped with the package: real node processes on loopback, fakes for unit tests."""
