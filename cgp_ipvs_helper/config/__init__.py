"""The helper's inputs: the command line, the VIP file and the member map."""
