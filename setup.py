# One call: everything else is in pyproject.toml.  cffi_modules builds
# kvmharness._native (native/ and the guest image from guest/).
from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffi"])
