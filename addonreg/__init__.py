"""addonreg: is this add-on file registered with addons.mozilla.org?"""

__version__ = "0.1.0"
