/* placeholder: the CLI dispatcher is being written */
int main (void) { return 1; }
