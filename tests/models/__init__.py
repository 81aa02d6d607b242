"""Tests of shopcast.models (a package so module names do not clash with other test dirs)."""
