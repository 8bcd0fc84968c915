'use strict';
document.getElementById('login').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = document.getElementById('token').value.trim();
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = 'session_id=' + encodeURIComponent(token) + '; path=/; SameSite=Strict' + secure;
  location.reload();
});
