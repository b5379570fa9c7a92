/* placeholder: being written (see issue tracker) */
