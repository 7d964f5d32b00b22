"""The contact page's messages: the form's checks, the inbox in SQL, the mail to the operator."""
